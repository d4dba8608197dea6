"""DICOM adapter: study metadata -> ImagingStudy, radiation dose -> Observations (issue 7).

Modules follow the standard's layers: ``reader`` (Part 10 headers, DICOMDIR),
``study`` (IOD attributes -> ImagingStudy), ``units`` (UCUM), ``dose`` (RDSR content
tree, TID 10011 / 10001 / 10021, image-header fallback), ``pipeline`` (one FHIR
transaction per study), ``scp`` (C-STORE / C-ECHO), ``stow`` (HTTP upload), ``cli``.
"""
