{{ config(materialized='incremental', incremental_strategy='delete+insert', unique_key=['grain', 'period_start']) }}
-- active_users: EXACT distinct users per whole hour/day/week/month, per platform and for all
-- platforms (platform NULL), with no other filter or one single-valued event_type or country filter.
{{ bucket_cube(ref('active_users_hourly'), ref('active_users_daily'), ['event_type', 'country'], [], 'active_users', 'platform') }}
