{# Roll `source_relation` (which has period_start, _max_batch_id) up to `grain` over `dimensions`,
   summing `measures`. Incremental: only periods that received new batches are recomputed, from
   all source rows of those periods; the model's unique_key (period_start) replaces them whole.
   With `from_first_affected` (for incremental_strategy='replace_from'): every period from the first
   one that received new batches on is recomputed, so that a period whose source rows all went away
   is replaced too. Either way the source rows are read from the first affected period on
   (`period_start >=`, which DuckDB checks against each row group's min/max: the sources are in
   period order), not by an IN on date_trunc(period_start) over the whole source. #}
{% macro incremental_rollup(source_relation, grain, dimensions, measures=[], from_first_affected=false) %}
{%- set period = dbt.date_trunc(grain, 'period_start') -%}
{% if is_incremental() %}
with affected_periods as (

    {{ affected_periods(source_relation, period) }}

),
{% else %}
with
{% endif %}

source_rows as (

    select * from {{ source_relation }}
    {% if is_incremental() %}
    where period_start >= (select min(period_start) from affected_periods)
    {% if not from_first_affected %}and {{ period }} in (select period_start from affected_periods){% endif %}
    {% endif %}

),

rolled_up as (

    select
        {{ period }} as period_start,
        {% for dimension in dimensions %}{{ dimension }},
        {% endfor %}
        {% for measure in measures %}cast(sum({{ measure }}) as {{ dbt.type_bigint() }}) as {{ measure }},
        {% endfor %}
        max(_max_batch_id) as _max_batch_id
    from source_rows
    group by {% for i in range(dimensions | length + 1) %}{{ i + 1 }}{{ ", " if not loop.last }}{% endfor %}

)

select * from rolled_up
-- The mart is written in the order the API reads it (a snapshot is a copy of the marts file;
-- docs/ARCHITECTURE.md, "Row order of the marts").
order by period_start
{% endmacro %}
