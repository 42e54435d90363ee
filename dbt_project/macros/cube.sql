{# Exact distinct users (and sums) per whole calendar bucket, for the filter combinations the
   time-series pipes are asked most: no filter, or one filter with one value (plus, with `segment`,
   per value of that column and for all of them, marked NULL). One row per
   (grain, period_start[, segment], filter_dim, filter_value); filter_dim '' means no filter.
   Hour buckets come from `hourly`, day/week/month buckets from `daily` (whole days).
   Incremental: the (grain, period) pairs that received new batches are recomputed from all their
   source rows and replace the old ones (unique_key = grain, period_start). The API reads a row only
   for a bucket that lies entirely inside the requested window (docs/ARCHITECTURE.md). #}
{% macro bucket_cube(hourly, daily, filter_dims, measures=[], users_column='unique_users', segment=none) %}
{%- set grains = [('hour', hourly), ('day', daily), ('week', daily), ('month', daily)] -%}
{%- set segments = [none, segment] if segment else [none] -%}
with
{% if is_incremental() %}
new_hours as (
    select distinct period_start from {{ hourly }} where _max_batch_id > {{ batch_watermark() }}
),
new_days as (
    select distinct period_start from {{ daily }} where _max_batch_id > {{ batch_watermark() }}
),
{% endif %}
{% for grain, src in grains %}
src_{{ grain }} as (
    select {{ dbt.date_trunc(grain, 'period_start') }} as bucket, *
    from {{ src }}
    {% if is_incremental() %}
    where {{ dbt.date_trunc(grain, 'period_start') }} in (
        select distinct {{ dbt.date_trunc(grain, 'period_start') }}
        from {{ 'new_hours' if grain == 'hour' else 'new_days' }}
    )
    {% endif %}
),
{% endfor %}
cube as (
{% for grain, src in grains %}
{% set g_loop = loop %}
{% for seg in segments %}
{% set s_loop = loop %}
{% for dim in [''] + filter_dims %}
    select
        '{{ grain }}' as grain,
        bucket as period_start,
        {% if segment %}{{ seg if seg else 'cast(null as varchar)' }} as {{ segment }},{% endif %}
        '{{ dim }}' as filter_dim,
        {{ dim if dim else "''" }} as filter_value,
        {% for m in measures %}cast(sum({{ m }}) as {{ dbt.type_bigint() }}) as {{ m }},
        {% endfor %}
        count(distinct user_key) as {{ users_column }},
        max(_max_batch_id) as _max_batch_id
    from src_{{ grain }}
    group by bucket{% if seg %}, {{ seg }}{% endif %}{% if dim %}, {{ dim }}{% endif %}
    {{ "union all" if not (g_loop.last and s_loop.last and loop.last) }}
{% endfor %}
{% endfor %}
{% endfor %}
)
select * from cube
order by grain, filter_dim, filter_value, {% if segment %}{{ segment }}, {% endif %}period_start
{% endmacro %}
