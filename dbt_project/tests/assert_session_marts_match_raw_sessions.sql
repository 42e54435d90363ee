-- Every session is counted once, bounces and durations add up to the raw events.
with raw_sessions as (
    select session_id, count(*) as events, sum(duration) as duration
    from {{ ref('stg_user_events') }}
    group by session_id
),

raw_totals as (
    select count(*) as session_count,
           sum(case when events = 1 then 1 else 0 end) as bounced_sessions,
           sum(duration) as duration_sum
    from raw_sessions
),

mart_totals as (
    select 'session_metrics_hourly' as mart, sum(session_count) as session_count,
           sum(bounced_sessions) as bounced_sessions, sum(duration_sum) as duration_sum
    from {{ ref('session_metrics_hourly') }}
    union all
    select 'session_metrics_daily', sum(session_count), sum(bounced_sessions), sum(duration_sum)
    from {{ ref('session_metrics_daily') }}
)

select mart_totals.*
from mart_totals cross join raw_totals
where coalesce(mart_totals.session_count, 0) <> raw_totals.session_count
   or coalesce(mart_totals.bounced_sessions, 0) <> coalesce(raw_totals.bounced_sessions, 0)
   or coalesce(mart_totals.duration_sum, 0) <> coalesce(raw_totals.duration_sum, 0)
