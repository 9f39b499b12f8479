DROP TABLE consultations;
DROP TABLE handovers;
