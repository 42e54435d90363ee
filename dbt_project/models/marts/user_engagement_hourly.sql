{{ config(materialized='incremental', incremental_strategy='delete+insert', unique_key='period_start') }}
-- user_engagement_time_series and event_metrics: events per hour × user × their filters.
{{ incremental_rollup(ref('geographic_distribution_hourly'), 'hour', ['user_key', 'event_type', 'platform', 'device', 'country'], ['event_count', 'duration_sum']) }}
