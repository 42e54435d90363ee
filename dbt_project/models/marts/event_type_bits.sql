{{ config(materialized='incremental', incremental_strategy='append') }}
-- event_metrics and geographic_distribution: a bit number per event_type (0, 1, 2… in order of first appearance), its bit in
-- user_event_types_daily.event_types. Only ever appended: a type keeps its bit across incremental
-- runs, so the stored masks stay valid (a full refresh numbers them again, and rebuilds the masks).

with

new_types as (

    select
        event_type,
        min(period_start) as first_day
    from {{ ref('event_day_sums') }}
    where filter_dim = ''
    {% if is_incremental() %}
      and event_type not in (select event_type from {{ this }})
    {% endif %}
    group by event_type

),

numbered as (

    select
        event_type,
        cast(
            {% if is_incremental() %}(select coalesce(max(bit) + 1, 0) from {{ this }}){% else %}0{% endif %}
            + row_number() over (order by first_day, event_type) - 1
        as integer) as bit
    from new_types

)

select * from numbered
