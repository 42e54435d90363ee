{{ config(materialized='incremental', incremental_strategy='delete+insert', unique_key='period_start') }}
-- geographic_distribution: events per day × user × place, with the pipe's filters.
{{ incremental_rollup(ref('geographic_distribution_hourly'), 'day', ['user_key', 'event_type', 'platform', 'device', 'country', 'region', 'city'], ['event_count', 'duration_sum']) }}
