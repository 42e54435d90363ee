{{ config(materialized='incremental', incremental_strategy='delete+insert', unique_key=['grain', 'period_start']) }}
-- active_users: EXACT distinct users per whole hour/day/week/month, per platform and for all
-- platforms (platform NULL), with no other filter or one single-valued event_type or country filter
-- (see macros/cube.sql). The active users of a bucket are its users in user_engagement_* too, so
-- the rows engagement_cube already counts (all platforms with no filter, an event_type or a country;
-- one platform with no other filter) are taken from it; only the platform × event_type and
-- platform × country counts are computed here.
with
{{ cube_sources(ref('active_users_hourly'), ref('active_users_daily')) }}
computed as (
{{ cube_rows([['platform', 'event_type'], ['platform', 'country']], [], 'active_users', 'platform') }}
),

engagement as (
    select * from {{ ref('engagement_cube') }}
    {% if is_incremental() %}where (grain, period_start) in (select grain, period_start from cube_buckets){% endif %}
),

cube as (
    select grain, period_start, platform, filter_dim, filter_value, active_users, _max_batch_id
    from computed
    union all
    select grain, period_start, cast(null as varchar), filter_dim, filter_value, unique_users, _max_batch_id
    from engagement
    where filter_dim in ('', 'event_type', 'country')
    union all
    select grain, period_start, filter_value, '', '', unique_users, _max_batch_id
    from engagement
    where filter_dim = 'platform'
)

select * from cube
-- the order the API reads (docs/ARCHITECTURE.md, "Row order of the marts")
order by grain, filter_dim, filter_value, platform, period_start
