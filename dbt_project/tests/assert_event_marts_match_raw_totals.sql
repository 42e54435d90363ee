-- Every event mart holds exactly the raw events: same count and same total duration.
with raw_totals as (
    select count(*) as event_count, sum(duration) as duration_sum
    from {{ ref('stg_user_events') }}
),

mart_totals as (
    select 'user_engagement_hourly' as mart, sum(event_count) as event_count, sum(duration_sum) as duration_sum from {{ ref('user_engagement_hourly') }}
    union all
    select 'user_engagement_daily', sum(event_count), sum(duration_sum) from {{ ref('user_engagement_daily') }}
    union all
    select 'geographic_distribution_hourly', sum(event_count), sum(duration_sum) from {{ ref('geographic_distribution_hourly') }}
    union all
    select 'geographic_distribution_daily', sum(event_count), sum(duration_sum) from {{ ref('geographic_distribution_daily') }}
)

select mart_totals.*
from mart_totals cross join raw_totals
where coalesce(mart_totals.event_count, 0) <> raw_totals.event_count
   or coalesce(mart_totals.duration_sum, 0) <> coalesce(raw_totals.duration_sum, 0)
