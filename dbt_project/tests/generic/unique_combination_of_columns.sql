{# Like dbt_utils.unique_combination_of_columns (the package hub is out of reach here), and as exact,
   but cheaper on the large marts than grouping every row by every column: rows are first grouped
   by one 64-bit hash of the combination, and only the rows whose hash occurs more than once (a
   duplicate always does; a hash collision sometimes does) are grouped by the columns themselves. #}
{% test unique_combination_of_columns(model, combination_of_columns) %}
{%- set columns = combination_of_columns | join(', ') %}

with repeated_hashes as (
    select hash({{ columns }}) as combination_hash
    from {{ model }}
    group by 1
    having count(*) > 1
)

select {{ columns }}, count(*) as occurrences
from {{ model }}
where hash({{ columns }}) in (select combination_hash from repeated_hashes)
group by {{ columns }}
having count(*) > 1

{% endtest %}
