{{
    config(
        materialized='incremental',
        incremental_strategy='append',
    )
}}
-- A dense integer key per distinct user_id: exact distinct counts become integer distinct counts.
-- Keys are only ever appended; a user keeps its key across incremental runs.

with new_user_ids as (

    select
        user_id,
        min(_batch_id) as first_batch_id
    from {{ ref('stg_user_events') }}
    {% if is_incremental() %}
    where _batch_id > (select coalesce(max(first_batch_id), 0) from {{ this }})
      and user_id not in (select user_id from {{ this }})
    {% endif %}
    group by user_id

),

keyed as (

    select
        user_id,
        {% if is_incremental() %}(select coalesce(max(user_key), 0) from {{ this }}){% else %}0{% endif %}
            + row_number() over (order by user_id) as user_key,
        first_batch_id
    from new_user_ids

)

select * from keyed
