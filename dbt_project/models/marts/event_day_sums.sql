{{ config(materialized='incremental', incremental_strategy='delete+insert', unique_key='period_start') }}
-- event_metrics: events and durations per day × event_type, per single-valued filter (macros/spans.sql).
{{ day_sums(ref('user_engagement_daily'), ['event_type'], ['platform', 'device', 'country']) }}
