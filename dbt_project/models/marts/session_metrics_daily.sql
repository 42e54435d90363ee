{{ config(materialized='table') }}
-- session_metrics: sessions by the UTC day of their start.
{{ incremental_rollup(ref('session_metrics_hourly'), 'day', ['platform', 'device', 'country'], ['session_count', 'bounced_sessions', 'duration_sum']) }}
