with source as (

    select * from {{ source('raw', 'user_events') }}

),

renamed as (

    select
        timestamp as event_at,
        {{ dbt.date_trunc('hour', 'timestamp') }} as event_hour,
        user_id,
        event_type,
        session_id,
        cast(duration as {{ dbt.type_bigint() }}) as duration,
        device,
        platform,
        page,
        country,
        region,
        city,
        _batch_id
    from source

)

select * from renamed
