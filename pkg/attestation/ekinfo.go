package attestation

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"strings"
)

// TPM identity attributes in an EK certificate's subject alternative
// name (TCG EK Credential Profile).
var (
	oidTPMManufacturer = asn1.ObjectIdentifier{2, 23, 133, 2, 1}
	oidTPMModel        = asn1.ObjectIdentifier{2, 23, 133, 2, 2}
	oidTPMVersion      = asn1.ObjectIdentifier{2, 23, 133, 2, 3}
)

// TPMInfo is what an EK certificate says about its TPM.
type TPMInfo struct {
	Manufacturer, Model, Version string
}

// softwareModels are TPM models that are software, whoever certified
// them: they never reach the hardware class.
var softwareModels = []string{"swtpm"}

// IsSoftware reports whether the certificate names a software TPM.
func (i TPMInfo) IsSoftware() bool {
	for _, m := range softwareModels {
		if strings.EqualFold(strings.TrimSpace(i.Model), m) {
			return true
		}
	}
	return false
}

// ParseTPMInfo reads the TPM manufacturer, model and version from an EK
// certificate's subject alternative name (a directoryName).
func ParseTPMInfo(cert *x509.Certificate) (TPMInfo, error) {
	var info TPMInfo
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(oidSubjectAltName) {
			continue
		}
		var names []asn1.RawValue
		if _, err := asn1.Unmarshal(ext.Value, &names); err != nil {
			return info, err
		}
		for _, n := range names {
			if n.Class != asn1.ClassContextSpecific || n.Tag != 4 { // directoryName
				continue
			}
			var rdns pkix.RDNSequence // a SEQUENCE of SETs
			if _, err := asn1.Unmarshal(n.Bytes, &rdns); err != nil {
				return info, err
			}
			for _, set := range rdns {
				for _, atv := range set {
					s, ok := atv.Value.(string)
					if !ok {
						continue
					}
					switch {
					case atv.Type.Equal(oidTPMManufacturer):
						info.Manufacturer = s
					case atv.Type.Equal(oidTPMModel):
						info.Model = s
					case atv.Type.Equal(oidTPMVersion):
						info.Version = s
					}
				}
			}
		}
	}
	if info == (TPMInfo{}) {
		return info, errors.New("EK certificate names no TPM")
	}
	return info, nil
}
