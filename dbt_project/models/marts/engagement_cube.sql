{{ config(materialized='incremental', incremental_strategy='delete+insert', unique_key=['grain', 'period_start']) }}
-- user_engagement_time_series: events, duration and EXACT distinct users per whole hour/day/week/
-- month, with no filter or one single-valued filter (see macros/cube.sql).
with
{{ cube_sources(ref('user_engagement_hourly'), ref('user_engagement_daily')) }}
cube as (
{{ cube_rows([[none, ''], [none, 'event_type'], [none, 'platform'], [none, 'device'], [none, 'country']],
             ['event_count', 'duration_sum']) }}
)
select * from cube
-- the order the API reads (docs/ARCHITECTURE.md, "Row order of the marts")
order by grain, filter_dim, filter_value, period_start
