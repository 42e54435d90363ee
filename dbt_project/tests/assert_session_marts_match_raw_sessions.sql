-- Every session is counted once, bounces and durations add up to the raw events: the session marts
-- against int_sessions over the periods they rewrote since the last tested build (incremental
-- `replace_from`: every period from the first one holding a newer row), and int_sessions against
-- the raw events for the sessions that received events since then (everything on a full build:
-- see macros/tested_scope.sql).
{%- set since = tested_through_batch() %}
with
{% if since > 0 %}
changed_sessions as (
    select distinct session_id from {{ ref('stg_user_events') }} where _batch_id > {{ since }}
),

first_rewritten_hour as (
    select min(period_start) as period_start from {{ ref('session_metrics_hourly') }} where _max_batch_id > {{ since }}
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

{% for grain in ['hour', 'day'] %}
session_totals_by_{{ grain }} as (
    select count(*) as session_count, sum(is_bounce) as bounced_sessions, sum(duration_sum) as duration_sum
    from {{ ref('int_sessions') }}
    {% if since > 0 %}
    where {{ dbt.date_trunc(grain, 'session_start') }} >= (select {{ dbt.date_trunc(grain, 'period_start') }} from first_rewritten_hour)
    {% endif %}
),

mart_totals_by_{{ grain }} as (
    select '{{ "session_metrics_hourly" if grain == "hour" else "session_metrics_daily" }}' as mart,
           sum(session_count) as session_count, sum(bounced_sessions) as bounced_sessions,
           sum(duration_sum) as duration_sum
    from {{ ref('session_metrics_hourly' if grain == 'hour' else 'session_metrics_daily') }}
    {% if since > 0 %}
    where period_start >= (select {{ dbt.date_trunc(grain, 'period_start') }} from first_rewritten_hour)
    {% endif %}
),
{% endfor %}

changed_session_totals as (
    select count(*) as session_count, sum(is_bounce) as bounced_sessions, sum(duration_sum) as duration_sum
    from {{ ref('int_sessions') }}
    {% if since > 0 %}where session_id in (select session_id from changed_sessions){% endif %}
),

mismatches as (
{% for grain in ['hour', 'day'] %}
    select mart_totals.*
    from mart_totals_by_{{ grain }} as mart_totals cross join session_totals_by_{{ grain }} as session_totals
    where coalesce(mart_totals.session_count, 0) <> session_totals.session_count
       or coalesce(mart_totals.bounced_sessions, 0) <> coalesce(session_totals.bounced_sessions, 0)
       or coalesce(mart_totals.duration_sum, 0) <> coalesce(session_totals.duration_sum, 0)
    union all
{% endfor %}
    select 'int_sessions', changed_session_totals.*
    from changed_session_totals cross join raw_totals
    where changed_session_totals.session_count <> raw_totals.session_count
       or coalesce(changed_session_totals.bounced_sessions, 0) <> coalesce(raw_totals.bounced_sessions, 0)
       or coalesce(changed_session_totals.duration_sum, 0) <> coalesce(raw_totals.duration_sum, 0)
)

select * from mismatches
