{{ config(materialized='incremental', incremental_strategy='delete+insert', unique_key=['grain', 'period_start']) }}
-- user_engagement_time_series: events, duration and EXACT distinct users per whole hour/day/week/
-- month, with no filter or one single-valued filter (see macros/cube.sql).
{{ bucket_cube(ref('user_engagement_hourly'), ref('user_engagement_daily'), ['event_type', 'platform', 'device', 'country'], ['event_count', 'duration_sum']) }}
