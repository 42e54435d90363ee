-- Every session is counted once, bounces and durations add up to the raw events: the session marts
-- (rebuilt whole every run) against all of int_sessions, and int_sessions against the raw events
-- for the sessions that received events since the last tested build (all of them on a full
-- build: see macros/tested_scope.sql).
{%- set since = tested_through_batch() %}
with
{% if since > 0 %}
changed_sessions as (
    select distinct session_id from {{ ref('stg_user_events') }} where _batch_id > {{ since }}
),
{% endif %}
raw_sessions as (
    select session_id, count(*) as events, sum(duration) as duration
    from {{ ref('stg_user_events') }}
    {% if since > 0 %}where session_id in (select session_id from changed_sessions){% endif %}
    group by session_id
),

raw_totals as (
    select count(*) as session_count,
           sum(case when events = 1 then 1 else 0 end) as bounced_sessions,
           sum(duration) as duration_sum
    from raw_sessions
),

session_totals as (
    select count(*) as session_count, sum(is_bounce) as bounced_sessions, sum(duration_sum) as duration_sum
    from {{ ref('int_sessions') }}
),

changed_session_totals as (
    select count(*) as session_count, sum(is_bounce) as bounced_sessions, sum(duration_sum) as duration_sum
    from {{ ref('int_sessions') }}
    {% if since > 0 %}where session_id in (select session_id from changed_sessions){% endif %}
),

mart_totals as (
    select 'session_metrics_hourly' as mart, sum(session_count) as session_count,
           sum(bounced_sessions) as bounced_sessions, sum(duration_sum) as duration_sum
    from {{ ref('session_metrics_hourly') }}
    union all
    select 'session_metrics_daily', sum(session_count), sum(bounced_sessions), sum(duration_sum)
    from {{ ref('session_metrics_daily') }}
),

mismatches as (
    select mart_totals.*
    from mart_totals cross join session_totals
    where coalesce(mart_totals.session_count, 0) <> session_totals.session_count
       or coalesce(mart_totals.bounced_sessions, 0) <> coalesce(session_totals.bounced_sessions, 0)
       or coalesce(mart_totals.duration_sum, 0) <> coalesce(session_totals.duration_sum, 0)
    union all
    select 'int_sessions', changed_session_totals.*
    from changed_session_totals cross join raw_totals
    where changed_session_totals.session_count <> raw_totals.session_count
       or coalesce(changed_session_totals.bounced_sessions, 0) <> coalesce(raw_totals.bounced_sessions, 0)
       or coalesce(changed_session_totals.duration_sum, 0) <> coalesce(raw_totals.duration_sum, 0)
)

select * from mismatches
