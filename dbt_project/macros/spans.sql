{# Ranking pipes (geographic_distribution, event_metrics): whole-window exact distinct users.
   `user_spans`: one row per (filter_dim, filter_value, keys, user_key) with the first and last day the
   user was active there. For a window of whole days [A, B], a user whose first or last day falls in
   [A, B] is certainly active in it; one whose span lies outside is not; only a span that strictly
   contains the window is uncertain, and the API checks those against the daily mart
   (serving/fastpath.py). Incremental: the users with new batches get their rows recomputed from all
   their daily rows (unique_key = user_key). filter_dim '' = no filter. #}
{% macro user_spans(source, keys, filter_dims) %}
with
{% if is_incremental() %}
affected_users as (
    select distinct user_key from {{ source }} where _max_batch_id > {{ batch_watermark() }}
),
{% endif %}
src as (
    select * from {{ source }}
    {% if is_incremental() %}where user_key in (select user_key from affected_users){% endif %}
),
spans as (
{% for dim in [''] + filter_dims %}
    select
        '{{ dim }}' as filter_dim,
        {{ dim if dim else "''" }} as filter_value,
        {% for k in keys %}{{ k }}, {% endfor %}
        user_key,
        min(period_start) as first_day,
        max(period_start) as last_day,
        max(_max_batch_id) as _max_batch_id
    from src
    group by {% if dim %}{{ dim }}, {% endif %}{% for k in keys %}{{ k }}, {% endfor %}user_key
    {{ "union all" if not loop.last }}
{% endfor %}
)
select * from spans
order by filter_dim, filter_value, {% for k in keys %}{{ k }}, {% endfor %}user_key
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
