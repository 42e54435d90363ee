{# Schemas are named exactly as configured (staging, intermediate, marts): the API and the
   publish step read `marts.<model>` whatever the target. #}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {{ custom_schema_name if custom_schema_name is not none else target.schema }}
{%- endmacro %}
