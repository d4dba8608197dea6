"""The static-response baseline: FastAPI answering a fixed FHIR JSON body, same server stack."""

from fastapi import FastAPI
from fastapi.responses import Response

BODY = (b'{"resourceType":"Patient","id":"p1","meta":{"versionId":"1","lastUpdated":'
        b'"2026-11-22T00:00:00.000Z"},"identifier":[{"system":"urn:oid:1.2.250.1.213.1.4.8",'
        b'"value":"180047512345678"}],"name":[{"family":"Martin","given":["Anne"]}],'
        b'"gender":"female","birthDate":"1980-04-02"}')

app = FastAPI()


@app.get("/fhir/Patient/{rid}")
async def static(rid: str) -> Response:
    return Response(BODY, media_type="application/fhir+json;charset=utf-8",
                    headers={"ETag": 'W/"1"'})
