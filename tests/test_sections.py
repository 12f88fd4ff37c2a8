from saerad.mimic.sections import extract_findings, extract_indication, normalise_section_name, split_sections

from conftest import REPORT_IMPRESSION_ONLY, REPORT_NEITHER, REPORT_WITH_FINDINGS


def test_findings_section_is_preferred_and_whitespace_collapsed():
    text, source = extract_findings(REPORT_WITH_FINDINGS)
    assert source == "findings"
    assert text == "Small left pleural effusion. No pneumothorax. Heart size is normal."


def test_misspelled_impression_is_the_fallback():
    text, source = extract_findings(REPORT_IMPRESSION_ONLY)
    assert (text, source) == ("No acute cardiopulmonary process.", "impression")


def test_report_with_neither_section_is_rejected():
    assert extract_findings(REPORT_NEITHER) == (None, None)


def test_last_paragraph_fallback_only_when_asked():
    report = " FINAL REPORT\n HISTORY:  Chest pain.\n \n Lungs are clear.\n \n No effusion or pneumothorax.\n"
    assert extract_findings(report) == (None, None)
    text, source = extract_findings(report, use_last_paragraph=True)
    assert source == "last_paragraph"
    assert text == "Lungs are clear. No effusion or pneumothorax."


def test_header_normalisation_rules():
    assert normalise_section_name("FINDINGS AND IMPRESSION") == "impression"
    assert normalise_section_name("Reason for exam") == "indication"
    assert normalise_section_name("PA AND LATERAL CHEST RADIOGRAPH") == "findings"
    assert normalise_section_name("FINAL ADDENDUM") == "addendum"
    assert normalise_section_name("SOMETHING ELSE") == "something else"


def test_empty_findings_section_is_dropped_and_last_occurrence_wins():
    report = (" FINAL REPORT\n FINDINGS:\n \n IMPRESSION:  First.\n \n IMPRESSION:  Second\n statement.\n")
    names = [s.name for s in split_sections(report)]
    assert "findings" not in names
    assert extract_findings(report) == ("Second statement.", "impression")


def test_indication_falls_back_to_history():
    assert extract_indication(REPORT_WITH_FINDINGS) == "___F with cough // eval for pneumonia"
    assert extract_indication(" FINAL REPORT\n HISTORY:  Fever.\n \n FINDINGS:  Clear.\n") == "Fever."
    assert extract_indication(REPORT_NEITHER) is None
