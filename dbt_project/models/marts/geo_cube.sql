{{ config(materialized='incremental', incremental_strategy='delete+insert', unique_key=['grain', 'period_start']) }}
-- geographic_distribution over a window that is exactly one UTC day, ISO week or month ("yesterday",
-- "last week", "this month") with no filter: EXACT distinct users, events and duration per place of
-- that bucket, at each group_by level (country; country, region; country, region, city; the columns
-- of coarser levels are NULL). The API sorts these rows instead of counting users over the window;
-- other windows take the spans or the per-user marts (serving/fastpath.py).
with
{{ cube_sources(none, ref('geographic_distribution_daily'), grains=['day', 'week', 'month']) }}
{%- for grain in ['day', 'week', 'month'] %}
-- one row per bucket × city × user first: the levels below count users distinct over fewer rows
users_{{ grain }} as (
    select bucket, country, region, city, user_key,
           sum(event_count) as event_count, sum(duration_sum) as duration_sum, max(_max_batch_id) as _max_batch_id
    from src_{{ grain }}
    group by bucket, country, region, city, user_key
),
{%- endfor %}

cube as (
{%- for grain in ['day', 'week', 'month'] %}
    select
        '{{ grain }}' as grain,
        bucket as period_start,
        case when grouping(region) = 1 then 'country' when grouping(city) = 1 then 'region' else 'city' end as group_by,
        country, region, city,
        cast(sum(event_count) as {{ dbt.type_bigint() }}) as event_count,
        count(distinct user_key) as unique_users,
        cast(sum(duration_sum) as {{ dbt.type_bigint() }}) as duration_sum,
        max(_max_batch_id) as _max_batch_id
    from users_{{ grain }}
    group by grouping sets ((bucket, country), (bucket, country, region), (bucket, country, region, city))
    {{ "union all" if not loop.last }}
{%- endfor %}
)

select * from cube
-- the order the API reads (docs/ARCHITECTURE.md, "Row order of the marts")
order by grain, group_by, period_start, country, region, city
