{{ config(materialized='incremental', incremental_strategy='replace_from') }}
-- depends_on: {{ ref('int_sessions') }}  (read on incremental runs only)
-- session_metrics: sessions, bounces and duration per whole hour/day/week/month, with no filter or
-- one single-valued filter (see macros/cube.sql): a whole bucket is one row, whatever the data's
-- size. Sums of the session marts (sessions are additive: no distinct count).
-- Incremental like the session marts: a late event can only move a session's start earlier, so every
-- bucket that changed starts at or after the month or ISO week (whichever is earlier) of the first
-- changed session's new start hour; every bucket of every grain starting from there on is recomputed
-- from the session marts and replaces the stored ones (`replace_from`: the earliest recomputed row is
-- that start, the week or month of that session), a bucket left without sessions included.
with

{% if is_incremental() %}
first_changed_hour as (

    {{ first_changed_session_hour() }}

),

recomputed_from as (

    select least({{ dbt.date_trunc('month', 'period_start') }}, {{ dbt.date_trunc('week', 'period_start') }}) as period_start
    from first_changed_hour

),
{% endif %}

{%- for grain in ['hour', 'day', 'week', 'month'] %}
src_{{ grain }} as (

    select {{ dbt.date_trunc(grain, 'period_start') }} as bucket, *
    from {{ ref('session_metrics_hourly') if grain == 'hour' else ref('session_metrics_daily') }}
    {% if is_incremental() %}
    -- whole buckets only: a week that began before a month's start (or the reverse) stays as stored
    where {{ dbt.date_trunc(grain, 'period_start') }} >= (select period_start from recomputed_from)
    {% endif %}

),
{%- endfor %}

cube as (
{{ cube_rows([[none, ''], [none, 'platform'], [none, 'device'], [none, 'country']],
             ['session_count', 'bounced_sessions', 'duration_sum'], users_column=none) }}
)

select * from cube
-- the order the API reads (docs/ARCHITECTURE.md, "Row order of the marts")
order by grain, filter_dim, filter_value, period_start
