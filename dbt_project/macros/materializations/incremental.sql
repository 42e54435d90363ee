{# dbt-duckdb's `incremental` materialization, with an incremental run of an existing table done in
   fewer round trips. Every refresh runs ~20 incremental models on a few new rows, so what costs is
   dbt's fixed work per model, not DuckDB's: dbt-duckdb reads the columns of the new rows and of the
   stored table four times (`expand_target_column_types`, then `on_schema_change`), each through
   `adapter.get_columns_in_relation`, which builds a full macro context per call (10 M events, +1%:
   dbt's elapsed time 2.35 -> 2.03 s, docs/PIPELINE.md). Here one query reads both column lists;
   when they are equal (every run but the first after a release changed a model) they are the
   columns to merge, and when they are not, dbt's own `process_schema_changes` decides, as before:
   `on_schema_change` (fail, append_new_columns, sync_all_columns, ignore) behaves as documented.
   Everything else (first build, full refresh, a view to replace, microbatch, MotherDuck, Python
   models) is dbt-duckdb's materialization, called as is. Skipped on this path:
   `expand_target_column_types`, which only widens sized string columns (DuckDB's VARCHAR has no
   size; any type change is a difference, decided as above); the temporary table is left to the connection, as
   dbt-duckdb does. #}
{% materialization incremental, adapter='duckdb', supported_languages=['sql', 'python'] -%}
  {%- set existing_relation = load_cached_relation(this) -%}
  {%- if existing_relation is none or existing_relation.is_view or should_full_refresh()
        or model['language'] != 'sql' or config.get('incremental_strategy') == 'microbatch'
        or adapter.is_motherduck() -%}
    {{ return(dbt.materialization_incremental_duckdb()) }}
  {%- endif -%}

  {%- set target_relation = this.incorporate(type='table') -%}
  {%- set temp_relation = make_temp_relation(target_relation) -%}
  {%- set on_schema_change = incremental_validate_on_schema_change(config.get('on_schema_change'), default='ignore') -%}

  {{ run_hooks(pre_hooks, inside_transaction=False) }}
  -- `BEGIN` happens here:
  {{ run_hooks(pre_hooks, inside_transaction=True) }}
  {% do run_query(create_table_as(True, temp_relation, compiled_code, 'sql')) %}
  {% set dest_columns = columns_if_unchanged(temp_relation, target_relation) %}
  {% if dest_columns is none %}
    {% set dest_columns = process_schema_changes(on_schema_change, temp_relation, existing_relation) %}
    {% if not dest_columns %}
      {% set dest_columns = adapter.get_columns_in_relation(existing_relation) %}
    {% endif %}
  {% endif %}

  {% set strategy_sql_macro_func = adapter.get_incremental_strategy_macro(context, config.get('incremental_strategy') or 'default') %}
  {% set build_sql = strategy_sql_macro_func({
      'target_relation': target_relation,
      'temp_relation': temp_relation,
      'unique_key': config.get('unique_key'),
      'dest_columns': dest_columns,
      'incremental_predicates': config.get('predicates', none) or config.get('incremental_predicates', none),
  }) %}
  {% call statement('main') %}
      {{- build_sql }}
  {% endcall %}

  {% if config.get('grants') %}
    {% do apply_grants(target_relation, config.get('grants'), should_revoke=should_revoke(existing_relation, false)) %}
  {% endif %}
  {% do persist_docs(target_relation, model) %}
  {{ run_hooks(post_hooks, inside_transaction=True) }}
  -- `COMMIT` happens here
  {% do adapter.commit() %}
  {{ run_hooks(post_hooks, inside_transaction=False) }}
  {{ return({'relations': [target_relation]}) }}
{%- endmaterialization %}


{# The columns of `stored_relation` (dbt Column objects, in order) if `new_relation`, a temporary
   table, has the same names and types in the same order; none otherwise. One query for both. #}
{% macro columns_if_unchanged(new_relation, stored_relation) %}
  {% set columns_of_both %}
    select database_name = 'temp' as is_new, column_name, data_type
    from duckdb_columns()
    where (database_name = 'temp' and schema_name = 'main' and table_name = '{{ new_relation.identifier }}')
       or (database_name = '{{ stored_relation.database }}' and schema_name = '{{ stored_relation.schema }}'
           and table_name = '{{ stored_relation.identifier }}')
    order by is_new, column_index
  {% endset %}
  {% set new_columns, stored_columns = [], [] %}
  {% for row in run_query(columns_of_both) %}
    {% do (new_columns if row[0] else stored_columns).append((row[1], row[2])) %}
  {% endfor %}
  {% if new_columns and new_columns == stored_columns %}
    {% set columns = [] %}
    {% for name, data_type in stored_columns %}
      {% do columns.append(api.Column.create(name, data_type)) %}
    {% endfor %}
    {{ return(columns) }}
  {% endif %}
  {{ return(none) }}
{% endmacro %}
