{{ config(materialized='incremental', incremental_strategy='replace_from') }}
-- session_metrics: sessions by the hour of their start and their first event's attributes.
-- Incremental: a late event can only move a session's start EARLIER, so every hour whose sessions
-- changed since the last run (the changed sessions' old and new start hours) is at or after the
-- earliest new start hour of a changed session; every hour from there on is recomputed from
-- int_sessions and replaces the stored ones (macros/incremental.sql, `replace_from`), an hour left
-- without sessions included. New data usually arrives at the end: a run rewrites its last hours.

with

{% if is_incremental() %}
first_changed_hour as (

    {{ first_changed_session_hour() }}

),
{% endif %}

sessions as (

    select * from {{ ref('int_sessions') }}
    {% if is_incremental() %}
    where {{ dbt.date_trunc('hour', 'session_start') }} >= (select period_start from first_changed_hour)
    {% endif %}

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
