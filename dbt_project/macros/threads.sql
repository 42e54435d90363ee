{# on-run-start: DuckDB's threads for this build. A refresh adds few rows: its queries are small, and
   dbt's own Python (one core at a time, the GIL) needs a core beside them; one DuckDB thread per
   query (dbt runs two at once) is then faster than two (10 M events, +1%: dbt's elapsed time
   1.93 -> 1.70 s, docs/PERFORMANCE.md). A full refresh, and a first build or a backlog of more than
   `var('few_new_rows')` raw rows newer than the last tested build keep DuckDB's default (every
   core) for their large queries. The setting lasts as long as the build's DuckDB connection. #}
{% macro set_threads_for_build() -%}
    {%- if execute and not flags.FULL_REFRESH -%}
        {%- set new_rows = run_query(
            "select count(*) from " ~ source('raw', 'user_events')
            ~ " where _batch_id > (select coalesce(max(batch_id), 0) from " ~ tested_through_relation() ~ ")"
        ).columns[0].values()[0] | int -%}
        {%- if new_rows <= var('few_new_rows') -%}
            {{ log("duckdb_threads=1 new_rows=" ~ new_rows ~ " (a small build: one DuckDB thread per query)", info=True) }}
            set threads = 1
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}
