{% set keys = ['event_type'] %}
{{ config(materialized='incremental', incremental_strategy='delete+insert', unique_key=span_key(keys)) }}
-- event_metrics: first/last active day per user × event_type, per single-valued filter (macros/spans.sql).
{{ user_spans(ref('user_engagement_daily'), keys, ['platform', 'device', 'country']) }}
