{# Exact distinct users (and sums) per whole calendar bucket, for the filter combinations the
   time-series pipes are asked most: no filter, or one filter with one value. One row per
   (grain, period_start[, segment], filter_dim, filter_value); filter_dim '' means no filter.
   Hour buckets come from the hourly mart, day/week/month buckets from the daily one (whole days).
   Incremental: the (grain, period) pairs that received new batches are recomputed from all their
   source rows and replace the old ones (unique_key = grain, period_start). The API reads a row only
   for a bucket that lies entirely inside the requested window (docs/ARCHITECTURE.md). #}


{# CTEs src_<grain> (the source rows with their bucket, on an incremental run only those of the
   buckets that received new batches) and, on an incremental run, cube_buckets (grain, period_start)
   of those buckets. Each is followed by a comma. `grains`: the buckets wanted (without 'hour',
   `hourly` is not read). #}
{% macro cube_sources(hourly, daily, grains=['hour', 'day', 'week', 'month']) %}
{%- for grain in grains %}
{%- set src = hourly if grain == 'hour' else daily %}
src_{{ grain }} as (
    select {{ dbt.date_trunc(grain, 'period_start') }} as bucket, *
    from {{ src }}
    {% if is_incremental() %}
    where {{ from_first_changed_period(src, grain) }}
      and {{ dbt.date_trunc(grain, 'period_start') }} in (
        select distinct {{ dbt.date_trunc(grain, 'period_start') }}
        from {{ src }}
        where _max_batch_id > {{ batch_watermark() }}
    )
    {% endif %}
),
{%- endfor %}
{% if is_incremental() %}
cube_buckets as (
{%- for grain in grains %}
    select distinct '{{ grain }}' as grain, bucket as period_start from src_{{ grain }}
    {{ "union all" if not loop.last }}
{%- endfor %}
),
{% endif %}
{% endmacro %}

{# The cube rows over the src_<grain> CTEs: for every grain, one group per bucket and `groupings`
   entry [segment value column or none, filter dimension or '']: the measures summed and the users
   counted distinct (never a sum of smaller buckets; `users_column` none: no users). With `segment`,
   the rows carry that column (NULL when the grouping has no segment). #}
{% macro cube_rows(groupings, measures=[], users_column='unique_users', segment=none) %}
{%- for grain in ['hour', 'day', 'week', 'month'] %}
{%- set grain_loop = loop %}
{%- for seg, dim in groupings %}
    select
        '{{ grain }}' as grain,
        bucket as period_start,
        {% if segment %}{{ seg if seg else 'cast(null as varchar)' }} as {{ segment }},{% endif %}
        '{{ dim }}' as filter_dim,
        {{ dim if dim else "''" }} as filter_value,
        {% for m in measures %}cast(sum({{ m }}) as {{ dbt.type_bigint() }}) as {{ m }},
        {% endfor %}
        {% if users_column %}count(distinct user_key) as {{ users_column }},{% endif %}
        max(_max_batch_id) as _max_batch_id
    from src_{{ grain }}
    group by bucket{% if seg %}, {{ seg }}{% endif %}{% if dim %}, {{ dim }}{% endif %}
    {{ "union all" if not (grain_loop.last and loop.last) }}
{%- endfor %}
{%- endfor %}
{% endmacro %}
