{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='session_id',
    )
}}
-- One row per session (all events sharing a session_id, over all loaded data). Every column is an
-- aggregate that merges: an incremental run aggregates only the events of batches newer than this
-- model's watermark and merges them into the stored rows of the sessions they belong to, so a
-- session split over files days apart is still one session, and no run reads the old raw events
-- (a scan of every raw row for the changed session ids: most of this model's time at 10 M events).

with new_events as (

    select * from {{ ref('stg_user_events') }}
    {% if is_incremental() %}
    where _batch_id > {{ batch_watermark() }}
    {% endif %}

),

event_sessions as (

    -- The first event decides the session's platform, device and country; ties on time go to
    -- the smallest (platform, device, country): the least of the (time, platform, device,
    -- country) structs, compared field by field (no column is NULL). One aggregation, no window.
    select
        session_id,
        min(event_at) as session_start,
        min({'event_at': event_at, 'platform': platform, 'device': device, 'country': country}) as first_event,
        count(*) as event_count,
        sum(duration) as duration_sum,
        max(_batch_id) as _max_batch_id
    from new_events
    group by session_id

),

{% if is_incremental() %}
stored_sessions as (

    -- The stored row of each session that received events, in the shape of event_sessions: its
    -- first event is (session_start, platform, device, country), the least of its old events.
    select
        session_id,
        session_start,
        {'event_at': session_start, 'platform': platform, 'device': device, 'country': country} as first_event,
        event_count,
        duration_sum,
        _max_batch_id
    from {{ this }}
    where session_id in (select session_id from event_sessions)

),

sessions as (

    -- The least of two least structs is the least of all the events; counts and sums add up.
    select
        session_id,
        min(session_start) as session_start,
        min(first_event) as first_event,
        cast(sum(event_count) as {{ dbt.type_bigint() }}) as event_count,
        sum(duration_sum) as duration_sum,
        max(_max_batch_id) as _max_batch_id
    from (
        select * from event_sessions
        union all
        select * from stored_sessions
    ) as old_and_new
    group by session_id

)
{% else %}
sessions as (

    select * from event_sessions

)
{% endif %}

select
    session_id,
    session_start,
    first_event.platform as platform,
    first_event.device as device,
    first_event.country as country,
    event_count,
    case when event_count = 1 then 1 else 0 end as is_bounce,
    duration_sum,
    _max_batch_id
from sessions
