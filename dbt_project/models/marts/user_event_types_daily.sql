{{ config(materialized='incremental', incremental_strategy='delete+insert', unique_key='period_start') }}
-- event_metrics and geographic_distribution: the event types each user sent per UTC day × platform,
-- device, country, region, city, as one bit mask (bit event_type_bits.bit set: the user sent that
-- type). ~2.5x fewer rows than the daily marts (a user's types of a day share a row): a window's
-- distinct users per type are one aggregation by user (bit_or), per place a distinct count over these
-- rows (docs/ARCHITECTURE.md, "Event-type masks"). A mask holds the first 64 types; the API answers
-- from the daily marts when a snapshot has more.

with

{% if is_incremental() %}
affected_days as (

    {{ affected_periods(ref('geographic_distribution_daily'), 'period_start') }}

),
{% endif %}

daily as (

    select * from {{ ref('geographic_distribution_daily') }}
    {% if is_incremental() %}
    where period_start in (select period_start from affected_days)
    {% endif %}

),

type_bits as (

    select event_type, bit from {{ ref('event_type_bits') }}
    where bit < 64

),

masks as (

    select
        daily.period_start,
        daily.user_key,
        daily.platform,
        daily.device,
        daily.country,
        daily.region,
        daily.city,
        bit_or(cast(1 as ubigint) << type_bits.bit) as event_types,
        max(daily._max_batch_id) as _max_batch_id
    from daily
    inner join type_bits on daily.event_type = type_bits.event_type
    group by daily.period_start, daily.user_key, daily.platform, daily.device, daily.country, daily.region, daily.city

)

select * from masks
-- The order the API reads (docs/ARCHITECTURE.md, "Row order of the marts").
order by period_start
