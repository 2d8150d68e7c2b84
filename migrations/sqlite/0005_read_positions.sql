-- Where each person has read each room to (issue 12): the same in every tab, across restarts. Only
-- moves forward. `ts` orders a person's rooms by when they last read them.
CREATE TABLE read_positions (
    person_id INTEGER NOT NULL,
    room TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    PRIMARY KEY (person_id, room)
) STRICT, WITHOUT ROWID;
