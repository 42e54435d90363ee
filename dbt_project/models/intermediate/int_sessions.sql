{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='session_id',
    )
}}
-- One row per session (all events sharing a session_id, over all loaded data). An incremental
-- run recomputes only sessions that received events since the last run, from all their events,
-- so a session split over files days apart is still one session.

with events as (

    {{ events_of_changed('session_id') }}

),

sessions as (

    -- The first event decides the session's platform, device and country; ties on time go to
    -- the smallest (platform, device, country): the least of the (time, platform, device,
    -- country) structs, compared field by field (no column is NULL). One aggregation, no window.
    select
        session_id,
        min(event_at) as session_start,
        min({'event_at': event_at, 'platform': platform, 'device': device, 'country': country}) as first_event,
        count(*) as event_count,
        case when count(*) = 1 then 1 else 0 end as is_bounce,
        sum(duration) as duration_sum,
        max(_batch_id) as _max_batch_id
    from events
    group by session_id

)

select
    session_id,
    session_start,
    first_event.platform as platform,
    first_event.device as device,
    first_event.country as country,
    event_count,
    is_bounce,
    duration_sum,
    _max_batch_id
from sessions
