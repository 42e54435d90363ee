{{ config(materialized='incremental', incremental_strategy='delete+insert', unique_key='period_start') }}
-- active_users: which users were active per day, with the pipe's filters (no measures needed).
{{ incremental_rollup(ref('active_users_hourly'), 'day', ['user_key', 'event_type', 'platform', 'country']) }}
