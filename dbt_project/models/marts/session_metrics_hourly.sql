{{ config(materialized='table') }}
-- session_metrics: sessions by the hour of their start and their first event's attributes.
-- Rebuilt whole from int_sessions (one row per session, already incremental): a late event can
-- move a session's start to another hour, which a per-hour incremental merge would miss.

with sessions as (

    select * from {{ ref('int_sessions') }}

),

sessions_by_start_hour as (

    select
        {{ dbt.date_trunc('hour', 'session_start') }} as period_start,
        platform,
        device,
        country,
        count(*) as session_count,
        cast(sum(is_bounce) as {{ dbt.type_bigint() }}) as bounced_sessions,
        cast(sum(duration_sum) as {{ dbt.type_bigint() }}) as duration_sum,
        max(_max_batch_id) as _max_batch_id
    from sessions
    group by 1, 2, 3, 4

)

select * from sessions_by_start_hour
order by period_start
