-- Every event mart holds exactly the raw events: same count and same total duration, per mart
-- grain, over the hours (days) that received events since the last tested build (all of them on a
-- full build: see macros/tested_scope.sql).
{%- set since = tested_through_batch() %}
with
{% if since > 0 %}
changed_hours as (
    select distinct event_hour as period_start from {{ ref('stg_user_events') }} where _batch_id > {{ since }}
),
changed_days as (
    select distinct {{ dbt.date_trunc('day', 'period_start') }} as period_start from changed_hours
),
{% endif %}
raw_hours as (
    select count(*) as event_count, sum(duration) as duration_sum
    from {{ ref('stg_user_events') }}
    {% if since > 0 %}where {{ raw_from_first_changed('hour', since) }} and event_hour in (select period_start from changed_hours){% endif %}
),

raw_days as (
    select count(*) as event_count, sum(duration) as duration_sum
    from {{ ref('stg_user_events') }}
    {% if since > 0 %}where {{ raw_from_first_changed('day', since) }} and {{ dbt.date_trunc('day', 'event_hour') }} in (select period_start from changed_days){% endif %}
),

mart_totals as (
{% for mart in ['user_engagement_hourly', 'geographic_distribution_hourly', 'user_engagement_daily', 'geographic_distribution_daily'] %}
    {%- set grain = 'hours' if mart.endswith('_hourly') else 'days' %}
    select '{{ mart }}' as mart, '{{ grain }}' as grain, sum(event_count) as event_count, sum(duration_sum) as duration_sum
    from {{ ref(mart) }}
    {% if since > 0 %}where period_start in (select period_start from changed_{{ grain }}){% endif %}
    {{ "union all" if not loop.last }}
{% endfor %}
),

raw_totals as (
    select 'hours' as grain, * from raw_hours
    union all
    select 'days', * from raw_days
)

select mart_totals.*
from mart_totals join raw_totals using (grain)
where coalesce(mart_totals.event_count, 0) <> raw_totals.event_count
   or coalesce(mart_totals.duration_sum, 0) <> coalesce(raw_totals.duration_sum, 0)
