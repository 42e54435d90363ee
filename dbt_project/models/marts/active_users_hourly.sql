{{ config(materialized='incremental', incremental_strategy='delete+insert', unique_key='period_start') }}
-- active_users: which users were active per hour, with the pipe's filters (no measures needed).
{{ incremental_rollup(ref('geographic_distribution_hourly'), 'hour', ['user_key', 'event_type', 'platform', 'country']) }}
