{{ config(materialized='incremental', incremental_strategy='delete+insert', unique_key='period_start') }}
-- geographic_distribution: events per UTC hour × user × every dimension a pipe can filter or group
-- by (place included): the finest event mart, which the other hourly marts roll up. An incremental
-- run recomputes only the hours that received events since the last run (late events included),
-- from all raw rows of those hours, then replaces those hours.

with events as (

    {{ events_of_changed_hours() }}

),

user_keys as (

    select user_id, user_key from {{ ref('int_user_keys') }}

),

hourly_activity as (

    select
        events.event_hour as period_start,
        user_keys.user_key,
        events.event_type,
        events.platform,
        events.device,
        events.country,
        events.region,
        events.city,
        count(*) as event_count,
        cast(sum(events.duration) as {{ dbt.type_bigint() }}) as duration_sum,
        max(events._batch_id) as _max_batch_id
    from events
    inner join user_keys on events.user_id = user_keys.user_id
    group by 1, 2, 3, 4, 5, 6, 7, 8

)

select * from hourly_activity
-- The mart is written in the order the API reads it (the marts file becomes the snapshot;
-- docs/ARCHITECTURE.md, "Row order of the marts").
order by period_start
