{# A mart's grain: one row per `combination_of_columns` (like dbt_utils.unique_combination_of_columns,
   out of reach here), and `period_column` never NULL and always the start of its `period` (hour or
   day). One test (one dbt node, one query) instead of three per mart.

   Exact, and cheaper on the large marts than grouping every row by every column: rows are first
   grouped by one 64-bit hash of the combination, and only the rows whose hash occurs more than once
   (a duplicate always does; a hash collision sometimes does) are grouped by the columns themselves.
   Each failing row names its problem. #}
{% test grain(model, combination_of_columns, period, period_column='period_start') %}
{%- set columns = combination_of_columns | join(', ') %}

with repeated_hashes as (
    select hash({{ columns }}) as combination_hash
    from {{ model }}
    group by 1
    having count(*) > 1
),

duplicates as (
    select 'the combination occurs ' || count(*) || ' times' as problem, {{ columns }}
    from {{ model }}
    where hash({{ columns }}) in (select combination_hash from repeated_hashes)
    group by {{ columns }}
    having count(*) > 1
),

bad_periods as (
    select '{{ period_column }} is not the start of a UTC {{ period }}' as problem, {{ columns }}
    from {{ model }}
    where {{ period_column }} is null
       or {{ period_column }} <> {{ dbt.date_trunc(period, period_column) }}
)

select * from duplicates
union all
select * from bad_periods

{% endtest %}
