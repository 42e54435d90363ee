{# Each of `columns` is a key on its own: never NULL and never repeated (dbt's `unique` and
   `not_null` tests of every column, in one test: one dbt node and one aggregation per column
   instead of four nodes for a two-key dictionary). Each failing row names its column, the problem
   and the value. #}
{% test unique_keys(model, columns) %}

with key_rows as (
    select {{ columns | join(', ') }}
    from {{ model }}
)
{%- for column in columns %}

select
    '{{ column }}' as key_column,
    case when {{ column }} is null then 'NULL in ' || count(*) || ' row(s)'
         else 'occurs ' || count(*) || ' times' end as problem,
    cast({{ column }} as varchar) as key_value
from key_rows
group by {{ column }}
having {{ column }} is null or count(*) > 1
{{ "union all" if not loop.last }}
{%- endfor %}

{% endtest %}
