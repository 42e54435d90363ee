-- Each hour's distinct users in the active-users marts equal the raw events' distinct users (the
-- hours that received events since the last tested build; all of them on a full build).
{%- set since = tested_through_batch() %}
with
{% if since > 0 %}
changed_hours as (
    select distinct event_hour as period_start from {{ ref('stg_user_events') }} where _batch_id > {{ since }}
),
{% endif %}
raw_hourly as (
    select event_hour as period_start, count(distinct user_id) as users
    from {{ ref('stg_user_events') }}
    {% if since > 0 %}where {{ raw_from_first_changed('hour', since) }} and event_hour in (select period_start from changed_hours){% endif %}
    group by 1
),

mart_hourly as (
    select period_start, count(distinct user_key) as users
    from {{ ref('active_users_hourly') }}
    {% if since > 0 %}where period_start in (select period_start from changed_hours){% endif %}
    group by 1
)

select coalesce(raw_hourly.period_start, mart_hourly.period_start) as period_start,
       raw_hourly.users as raw_users, mart_hourly.users as mart_users
from raw_hourly full outer join mart_hourly on raw_hourly.period_start = mart_hourly.period_start
where raw_hourly.users is distinct from mart_hourly.users
