{# A period column holds only period starts: its value equals its own truncation. #}
{% test truncated_to_hour(model, column_name) %}
select {{ column_name }} from {{ model }}
where {{ column_name }} <> {{ dbt.date_trunc('hour', column_name) }}
{% endtest %}

{% test truncated_to_day(model, column_name) %}
select {{ column_name }} from {{ model }}
where {{ column_name }} <> {{ dbt.date_trunc('day', column_name) }}
{% endtest %}
