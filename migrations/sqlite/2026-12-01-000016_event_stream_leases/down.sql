DROP TABLE event_stream_leases;
