"""Dataset readers: the reference MGIMM files as they are, and the project's own JSONL format.

Every reader returns plain dataclass samples (no torch) and a report of skipped bad records.
"""

from training.data.records import (DESCRIPTION_INSTRUCTION, REGION_INSTRUCTION, ChipRecord,
                                   DescriptionSample, ReadResult, RegionRecord, RegionSample,
                                   read_chip_records, write_chip_records)
from training.data.reference import (Question, read_coco_captions, read_description_file,
                                     read_question_file, read_region_file)
from training.data.validate import BadRecordError, ReadReport

__all__ = [
    "BadRecordError", "ChipRecord", "DESCRIPTION_INSTRUCTION", "DescriptionSample", "Question",
    "REGION_INSTRUCTION", "ReadReport", "ReadResult", "RegionRecord", "RegionSample",
    "read_chip_records", "read_coco_captions", "read_description_file", "read_question_file",
    "read_region_file", "write_chip_records",
]
