{{ config(materialized='incremental', incremental_strategy='delete+insert', unique_key='user_key') }}
-- geographic_distribution: first/last active day per user × place, per single-valued filter (macros/spans.sql).
{{ user_spans(ref('geographic_distribution_daily'), ['country', 'region', 'city'], ['event_type', 'platform', 'device']) }}
