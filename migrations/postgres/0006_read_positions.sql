-- As migrations/sqlite/0005_read_positions.sql: each person's read position per room.
CREATE TABLE read_positions (
    person_id BIGINT NOT NULL,
    room TEXT COLLATE "C" NOT NULL,
    seq BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    PRIMARY KEY (person_id, room)
);
