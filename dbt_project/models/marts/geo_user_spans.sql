{% set keys = ['country', 'region', 'city'] %}
{% set levels = {'country': 1, 'region': 2, 'city': 3} %}
{{ config(materialized='incremental', incremental_strategy='delete+insert', unique_key=span_key(keys, levels)) }}
-- geographic_distribution: first/last active day per user × place at each group_by level, per
-- single-valued filter (macros/spans.sql).
{{ user_spans(ref('geographic_distribution_daily'), keys, ['event_type', 'platform', 'device'], levels=levels) }}
