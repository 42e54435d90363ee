{% set keys = ['country', 'region', 'city'] %}
{{ config(materialized='incremental', incremental_strategy='delete+insert', unique_key=span_key(keys)) }}
-- geographic_distribution: first/last active day per user × place, per single-valued filter (macros/spans.sql).
{{ user_spans(ref('geographic_distribution_daily'), keys, ['event_type', 'platform', 'device'], key_filter='country') }}
