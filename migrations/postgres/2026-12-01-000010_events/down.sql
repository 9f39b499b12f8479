DROP TABLE event_tickets;
DROP TABLE event_horizon;
DROP TABLE events;
