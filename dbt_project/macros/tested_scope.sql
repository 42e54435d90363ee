{# Tests scoped to what changed. A full rebuild (--full-refresh) tests every row. An incremental
   build tests only the rows that can have changed since the last build whose tests all passed:
   every other row was tested then and has not been rewritten since. `main.tested_through` holds
   that build's newest raw batch (recorded by record_tested_through at the end of a passing
   `dbt build` of the whole project; reset at the start of a full refresh). `--vars
   '{full_tests: true}'` tests everything anyway. #}

{% macro tested_through_batch() -%}
    {%- if not execute or flags.FULL_REFRESH or var('full_tests', false) -%}
        {{ return(0) }}
    {%- endif -%}
    {#- Read once per dbt invocation, not by each of a build's ~30 tests (a query and a result table
        each, ~0.1 s of a refresh): the table changes only in the on-run-start and on-run-end hooks,
        and every node's context shares `graph`, which holds the value under this invocation's id. -#}
    {%- set read = graph.setdefault('engage_tested_through_by_invocation', {}) -%}
    {%- if invocation_id not in read -%}
        {%- set result = run_query("select coalesce(max(batch_id), 0) from " ~ tested_through_relation()) -%}
        {%- do read.update({invocation_id: result.columns[0].values()[0] | int}) -%}
    {%- endif -%}
    {{ return(read[invocation_id]) }}
{%- endmacro %}

{% macro tested_through_relation() -%}
    {{ target.database }}.main.tested_through
{%- endmacro %}

{# on-run-start: the table exists; a build that writes an incremental model whole (a full refresh,
   a model that does not exist yet: new, or its file deleted) forgets what was tested, so that those
   rows are all tested, by this build or, should it fail, by the next. #}
{% macro prepare_tested_through() -%}
    create table if not exists {{ tested_through_relation() }} (batch_id bigint);
    {%- set built_whole = [] -%}
    {%- if execute -%}
        {%- for node in graph.nodes.values() -%}
            {%- if node.resource_type == 'model' and node.config.materialized == 'incremental'
                  and adapter.get_relation(database=node.database, schema=node.schema, identifier=node.alias) is none -%}
                {%- do built_whole.append(node.name) -%}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    {% if flags.FULL_REFRESH or built_whole %}delete from {{ tested_through_relation() }};{% endif %}
{%- endmacro %}

{# on-run-end: after a `dbt build` of the whole project in which every model was built and every
   test passed, every raw batch loaded so far has been tested (the refresh lock keeps the loader
   out while dbt runs). A `dbt run` tests nothing and `dbt test` builds nothing: neither records. #}
{% macro record_tested_through(results) -%}
    {%- if execute -%}
        {%- set whole_project = not invocation_args_dict.get('select') and not invocation_args_dict.get('exclude') -%}
        {%- set failed = results | rejectattr('status', 'in', ['success', 'pass', 'warn']) | list -%}
        {%- set tested = results | selectattr('node.resource_type', 'equalto', 'test') | list -%}
        {%- if flags.WHICH == 'build' and whole_project and tested and not failed -%}
            delete from {{ tested_through_relation() }};
            insert into {{ tested_through_relation() }}
            select coalesce(max(_batch_id), 0) from {{ source('raw', 'user_events') }};
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}

{# The rows a generic test reads (dbt calls this for every generic test's model): on an
   incremental build, only the partitions that changed since tested_through_batch():
   - an incremental model with a unique_key (period_start, [grain, period_start], session_id, the
     span row key) is rewritten a partition at a time, every rewritten partition holding at least one
     row newer than the watermark (`_max_batch_id`): the test reads those partitions whole, so a
     duplicate of an old row in a rewritten partition is still seen;
   - an incremental model with incremental_strategy='replace_from' (the session marts) rewrites every
     period from the first one a run changed: the test reads the periods from the first one holding
     a row newer than the watermark;
   - a relation whose `meta.batch_column` is set (the raw events: sources.yml) only
     gains rows: the test reads the rows of newer batches.
   Anything else (tables rebuilt every run, the small append-only key dictionary) is read whole.
   A test's own `where` config still applies. #}
{% macro get_where_subquery(relation) -%}
    {%- set conditions = [] -%}
    {%- set where = config.get('where', '') -%}
    {%- if where -%}{%- do conditions.append(where) -%}{%- endif -%}
    {%- set since = tested_through_batch() -%}
    {%- if since > 0 -%}
        {%- set scope = changed_rows_condition(relation, since) -%}
        {%- if scope -%}{%- do conditions.append(scope) -%}{%- endif -%}
    {%- endif -%}
    {%- if conditions -%}
        {%- do return("(select * from " ~ relation ~ " where " ~ conditions | join(" and ") ~ ") dbt_subquery") -%}
    {%- endif -%}
    {%- do return(relation) -%}
{%- endmacro %}

{% macro changed_rows_condition(relation, since) -%}
    {%- set node = node_of_relation(relation) -%}
    {%- if node is none -%}{{ return('') }}{%- endif -%}
    {%- set batch_column = node.meta.get('batch_column') or node.config.get('meta', {}).get('batch_column') -%}
    {%- if batch_column -%}
        {{ return(batch_column ~ ' > ' ~ since) }}
    {%- endif -%}
    {%- if node.config.get('materialized') == 'incremental' and node.config.get('incremental_strategy') == 'replace_from' -%}
        {{ return('period_start >= (select min(period_start) from ' ~ relation ~ ' where _max_batch_id > ' ~ since ~ ')') }}
    {%- endif -%}
    {%- set unique_key = node.config.get('unique_key') if node.resource_type == 'model' else none -%}
    {%- if node.config.get('materialized') == 'incremental' and unique_key -%}
        {%- set keys = [unique_key] if unique_key is string else unique_key -%}
        {%- set key_list = keys | join(', ') -%}
        {{ return('(' ~ key_list ~ ') in (select ' ~ key_list ~ ' from ' ~ relation ~ ' where _max_batch_id > ' ~ since ~ ')') }}
    {%- endif -%}
    {{ return('') }}
{%- endmacro %}

{# The model or source node whose relation is `relation` (none if there is none). #}
{% macro node_of_relation(relation) -%}
    {%- set name = (relation | string) | lower -%}
    {#- a generic test names the model it is attached to: no search (a test of a source has none) -#}
    {%- set attached = graph.nodes.get(model.attached_node) if model.attached_node else none -%}
    {%- if attached and (attached.relation_name or '') | lower == name -%}
        {{ return(attached) }}
    {%- endif -%}
    {%- for node in graph.nodes.values() | list + graph.sources.values() | list -%}
        {%- if node.resource_type in ['model', 'source'] and (node.relation_name or '') | lower == name -%}
            {{ return(node) }}
        {%- endif -%}
    {%- endfor -%}
    {{ return(none) }}
{%- endmacro %}
