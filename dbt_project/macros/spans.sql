{# Ranking pipes (geographic_distribution, event_metrics): whole-window exact distinct users.
   `user_spans`: one row per (filter_dim, filter_value, [group_by,] keys, user_key) with the first and
   last day the user was active there. For a window of whole days [A, B], a user whose first or last
   day falls in [A, B] is certainly active in it; one whose span lies outside is not; only a span that
   strictly contains the window is uncertain, and the API checks those against the daily mart
   (serving/fastpath.py). filter_dim '' = no filter.
   `levels` (geographic_distribution's group_by): a span per level, over that level's leading keys
   (country; country, region; country, region, city), the finer key columns '' (group_by tells a
   level's rows apart; '' rather than NULL because the incremental delete+insert matches rows by
   equality). A (level keys, user) is then one row, so the API counts users with count(*) instead of
   count(DISTINCT user_key) over the finer rows (over a year at 10 M events: ~8 ms instead of ~40
   without a filter, ~7 instead of ~12-17 with one); a user seen in two cities of a region has one
   region span, from the earlier first day to the later last day.
   Incremental: events are only ever added, so a span only grows. The daily rows newer than the
   watermark (the days recomputed since: every day that gained events) give the spans of the new
   activity; each is merged with the stored span of the same row (earliest first day, latest last
   day) and replaces it (unique_key = the whole row key, see span_key). The spans of older rows of
   the same days were already in the stored spans. #}
{% macro span_key(keys, levels=none) -%}
    {{ return(['filter_dim', 'filter_value'] + (['group_by'] if levels else []) + keys + ['user_key']) }}
{%- endmacro %}

{% macro user_spans(source, keys, filter_dims, levels=none) %}
{%- set key = span_key(keys, levels) -%}
{{- require_columns(key + ['first_day', 'last_day']) -}}
{#- [(group_by name or none, how many leading keys)] -#}
{%- set parts = [] -%}
{%- for level, depth in (levels.items() | list if levels else [(none, keys | length)]) -%}
    {%- for dim in [''] + filter_dims %}{% do parts.append((level, depth, dim)) %}{% endfor -%}
{%- endfor -%}
with
src as (
    select * from {{ source }}
    {% if is_incremental() %}where _max_batch_id > {{ batch_watermark() }}{% endif %}
),
-- The days collapsed once per (keys, filter dimensions, user) (min and max compose), so that each
-- filter's spans aggregate these rows, several times fewer than the daily rows.
by_user as materialized (
    select
        {% for c in keys + filter_dims %}{{ c }}, {% endfor %}
        user_key,
        min(period_start) as first_day,
        max(period_start) as last_day,
        max(_max_batch_id) as _max_batch_id
    from src
    group by all
),
spans as (
{% for level, depth, dim in parts %}{% set level_keys = keys[:depth] %}
    select
        '{{ dim }}' as filter_dim,
        {{ dim if dim else "''" }} as filter_value,
        {% if level %}'{{ level }}' as group_by,{% endif %}
        {% for k in keys %}{{ k if k in level_keys else "''" }} as {{ k }}, {% endfor %}
        user_key,
        min(first_day) as first_day,
        max(last_day) as last_day,
        max(_max_batch_id) as _max_batch_id
    from by_user
    group by {% if dim %}{{ dim }}, {% endif %}{% for k in level_keys %}{{ k }}, {% endfor %}user_key
    {{ "union all" if not loop.last }}
{% endfor %}
){% if is_incremental() %},
merged as (
    select
        {% for k in key %}new.{{ k }}, {% endfor %}
        least(new.first_day, coalesce(old.first_day, new.first_day)) as first_day,
        greatest(new.last_day, coalesce(old.last_day, new.last_day)) as last_day,
        greatest(new._max_batch_id, coalesce(old._max_batch_id, new._max_batch_id)) as _max_batch_id
    from spans as new
    -- only the stored spans of the users with new activity: the join then builds on those rows, not
    -- on the whole table (10 M events, a +1% refresh: geo_user_spans 1.7-2.5 s -> 0.45 s)
    left join (
        select * from {{ this }} where user_key in (select user_key from spans)
    ) as old using ({{ key | join(', ') }})
){% endif %}
select * from {{ 'merged' if is_incremental() else 'spans' }}
-- The order the API reads (docs/ARCHITECTURE.md, "Row order of the marts"): a query reads one
-- filter's (and level's) rows: each such group contiguous is what the zone maps need. With levels
-- (3x the rows) the groups are ordered by a hash of their key, 20% cheaper to sort by than the
-- strings (10 M events: 6.2 s instead of 7.8 for geo_user_spans); a longer sort key (the places, the
-- user) would cost more and no query uses it.
order by {{ "hash(filter_dim, filter_value, group_by)" if levels else "filter_dim, filter_value" }}
{% endmacro %}

{# Additive measures per day × (filter_dim, filter_value) × keys, without users: the ranking pipes'
   event counts and durations over whole days. Incremental by day, like the other daily marts. #}
{% macro day_sums(source, keys, filter_dims) %}
with
{% if is_incremental() %}
affected_days as (
    {{ affected_periods(source, 'period_start') }}
),
{% endif %}
src as (
    select * from {{ source }}
    {% if is_incremental() %}where period_start in (select period_start from affected_days){% endif %}
),
sums as (
{% for dim in [''] + filter_dims %}
    select
        period_start,
        '{{ dim }}' as filter_dim,
        {{ dim if dim else "''" }} as filter_value,
        {% for k in keys %}{{ k }}, {% endfor %}
        cast(sum(event_count) as {{ dbt.type_bigint() }}) as event_count,
        cast(sum(duration_sum) as {{ dbt.type_bigint() }}) as duration_sum,
        max(_max_batch_id) as _max_batch_id
    from src
    group by period_start, {% if dim %}{{ dim }}, {% endif %}{% for k in keys %}{{ k }}{{ ", " if not loop.last }}{% endfor %}
    {{ "union all" if not loop.last }}
{% endfor %}
)
select * from sums
order by filter_dim, filter_value, period_start
{% endmacro %}
