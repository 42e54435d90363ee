{{ config(materialized='incremental', incremental_strategy='replace_from') }}
-- session_metrics: sessions by the UTC day of their start. Incremental like session_metrics_hourly:
-- every day from the first one whose hours changed is recomputed and replaces the stored ones.
{{ incremental_rollup(ref('session_metrics_hourly'), 'day', ['platform', 'device', 'country'], ['session_count', 'bounced_sessions', 'duration_sum'], from_first_affected=true) }}
