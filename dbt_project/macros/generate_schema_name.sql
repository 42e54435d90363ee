{# Schemas are named exactly as configured (staging, intermediate), except that the marts are the
   `main` schema of the marts database (dbt_project.yml): the API and the publish step read
   `<mart>` in a snapshot, a copy of that database's file. #}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if node is not none and node.config.get('database') == 'marts' -%}
        main
    {%- else -%}
        {{ custom_schema_name if custom_schema_name is not none else target.schema }}
    {%- endif -%}
{%- endmacro %}
