{{ config(materialized='incremental', incremental_strategy='delete+insert', unique_key='period_start') }}
-- geographic_distribution: events and durations per day × place, per single-valued filter (macros/spans.sql).
{{ day_sums(ref('geographic_distribution_daily'), ['country', 'region', 'city'], ['event_type', 'platform', 'device']) }}
