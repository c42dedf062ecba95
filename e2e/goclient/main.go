// Command goclient drives `coffer server` with the AWS SDK for Go v2, configured only with what
// a user would give it: an endpoint, a region and a static access key. It prints one JSON object
// per line for each step and exits 1 when any step did not turn out as expected (2 on bad usage).
//
//	goclient -endpoint http://127.0.0.1:PORT -region us-east-1 [-mode scenario]
//	goclient -endpoint ... -region us-east-1 -mode wrong-region -wrong-region eu-west-1
//	goclient -endpoint ... -region us-east-1 -mode secrets
//	goclient -endpoint ... -region us-east-1 -mode ssm
//
// scenario and wrong-region use KMS; secrets uses Secrets Manager (secrets.go); ssm uses SSM
// Parameter Store (ssm.go).
//
// The access key comes from -access-key-id/-secret-access-key or, so that the secret need not
// show in a process listing, from COFFER_ACCESS_KEY_ID/COFFER_SECRET_ACCESS_KEY. COFFER_ENDPOINT
// and COFFER_REGION stand in for the other two flags.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"
)

// step is one line of output. Fields that do not apply to a step are left out.
type step struct {
	Step string `json:"step"`
	OK   bool   `json:"ok"`
	// Problem says why OK is false.
	Problem string `json:"problem,omitempty"`
	// ExpectError is the AWS error code the step needs; ErrorCode is the one it got.
	ExpectError  string         `json:"expectError,omitempty"`
	ErrorCode    string         `json:"errorCode,omitempty"`
	ErrorMessage string         `json:"errorMessage,omitempty"`
	HTTPStatus   int            `json:"httpStatus,omitempty"`
	RequestID    string         `json:"requestId,omitempty"`
	Detail       map[string]any `json:"detail,omitempty"`
}

type runner struct {
	out      *json.Encoder
	failures int
}

func (r *runner) emit(s step) {
	if !s.OK {
		r.failures++
	}
	_ = r.out.Encode(s)
}

// describeError fills the error fields of s from what the SDK made of a failed call.
func describeError(s *step, err error) {
	var api smithy.APIError
	if errors.As(err, &api) {
		s.ErrorCode = api.ErrorCode()
		s.ErrorMessage = api.ErrorMessage()
	} else {
		s.ErrorMessage = err.Error()
	}
	var resp *awshttp.ResponseError
	if errors.As(err, &resp) {
		s.HTTPStatus = resp.HTTPStatusCode()
		s.RequestID = resp.ServiceRequestID()
	}
}

// succeeded reports a call that had to succeed; check (when the call did) returns a problem or "".
func (r *runner) succeeded(name string, err error, detail map[string]any, check func() string) bool {
	s := step{Step: name, Detail: detail}
	if err != nil {
		describeError(&s, err)
		s.Problem = "call failed"
		r.emit(s)
		return false
	}
	if check != nil {
		s.Problem = check()
	}
	s.OK = s.Problem == ""
	r.emit(s)
	return s.OK
}

// failedWith reports a call that had to fail with the AWS error code want. typed, when given,
// says whether the SDK also turned the error into the service's own exception type.
func (r *runner) failedWith(name, want string, err error, typed func(error) bool) {
	s := step{Step: name, ExpectError: want}
	switch {
	case err == nil:
		s.Problem = "call succeeded"
	default:
		describeError(&s, err)
		if s.ErrorCode != want {
			s.Problem = fmt.Sprintf("error code %q", s.ErrorCode)
		} else if typed != nil && !typed(err) {
			s.Problem = "the SDK did not return the modelled exception type"
		}
		if typed != nil {
			s.Detail = map[string]any{"typed": typed(err)}
		}
	}
	s.OK = s.Problem == ""
	r.emit(s)
}

func isType[T error](err error) bool {
	var target T
	return errors.As(err, &target)
}

// loadConfig configures the SDK the way an application would, with the shared config files and
// the environment's AWS_* settings overridden by explicit options. No retries: a throttled or
// failed call must show in the step that made it.
func loadConfig(ctx context.Context, region, keyID, secret string) (aws.Config, error) {
	return config.LoadDefaultConfig(ctx,
		config.WithRegion(region),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(keyID, secret, "")),
		config.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }),
	)
}

// newClient builds a KMS client for the server at endpoint.
func newClient(ctx context.Context, endpoint, region, keyID, secret string) (*kms.Client, error) {
	cfg, err := loadConfig(ctx, region, keyID, secret)
	if err != nil {
		return nil, err
	}
	return kms.NewFromConfig(cfg, func(o *kms.Options) {
		o.BaseEndpoint = aws.String(endpoint)
	}), nil
}

func scenario(ctx context.Context, r *runner, client *kms.Client) {
	created, err := client.CreateKey(ctx, &kms.CreateKeyInput{
		Description: aws.String("e2e: aws-sdk-go-v2"),
		Tags:        []types.Tag{{TagKey: aws.String("client"), TagValue: aws.String("aws-sdk-go-v2")}},
	})
	var keyID, keyArn string
	var detail map[string]any
	if err == nil && created.KeyMetadata != nil {
		keyID, keyArn = aws.ToString(created.KeyMetadata.KeyId), aws.ToString(created.KeyMetadata.Arn)
		detail = map[string]any{"keyId": keyID, "arn": keyArn,
			"keySpec": string(created.KeyMetadata.KeySpec), "keyState": string(created.KeyMetadata.KeyState)}
	}
	if !r.succeeded("CreateKey", err, detail, func() string {
		if keyID == "" || !strings.HasSuffix(keyArn, ":key/"+keyID) {
			return "no key id, or an ARN that does not end with it"
		}
		if created.KeyMetadata.KeyState != types.KeyStateEnabled {
			return "new key is not Enabled"
		}
		return ""
	}) {
		return // everything after needs the key
	}

	described, err := client.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(keyID)})
	detail = nil
	if err == nil && described.KeyMetadata == nil {
		err = errors.New("DescribeKey answered without KeyMetadata")
	}
	if err == nil {
		m := described.KeyMetadata
		detail = map[string]any{"keyId": aws.ToString(m.KeyId), "arn": aws.ToString(m.Arn),
			"keySpec": string(m.KeySpec), "keyUsage": string(m.KeyUsage), "keyState": string(m.KeyState),
			"enabled": m.Enabled, "description": aws.ToString(m.Description), "account": aws.ToString(m.AWSAccountId)}
	}
	r.succeeded("DescribeKey", err, detail, func() string {
		m := described.KeyMetadata
		switch {
		case aws.ToString(m.KeyId) != keyID || aws.ToString(m.Arn) != keyArn:
			return "another key described"
		case m.KeySpec != types.KeySpecSymmetricDefault || m.KeyUsage != types.KeyUsageTypeEncryptDecrypt:
			return "not a symmetric encrypt/decrypt key"
		case !m.Enabled || m.KeyState != types.KeyStateEnabled:
			return "key not enabled"
		}
		return ""
	})

	// Binary fields go over the wire as base64; random bytes catch any mangling of that.
	plaintext := make([]byte, 300)
	_, _ = rand.Read(plaintext)
	encCtx := map[string]string{"purpose": "e2e", "client": "aws-sdk-go-v2"}
	encrypted, err := client.Encrypt(ctx, &kms.EncryptInput{
		KeyId: aws.String(keyID), Plaintext: plaintext, EncryptionContext: encCtx,
	})
	detail = nil
	if err == nil {
		detail = map[string]any{"keyId": aws.ToString(encrypted.KeyId),
			"algorithm": string(encrypted.EncryptionAlgorithm), "ciphertextBytes": len(encrypted.CiphertextBlob)}
	}
	if !r.succeeded("Encrypt", err, detail, func() string {
		if aws.ToString(encrypted.KeyId) != keyArn {
			return "response KeyId is not the key's ARN"
		}
		if len(encrypted.CiphertextBlob) <= len(plaintext) {
			return "ciphertext no longer than the plaintext"
		}
		return ""
	}) {
		return
	}
	blob := encrypted.CiphertextBlob

	// No KeyId: a symmetric ciphertext names its key.
	decrypted, err := client.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: blob, EncryptionContext: encCtx})
	detail = nil
	if err == nil {
		detail = map[string]any{"keyId": aws.ToString(decrypted.KeyId), "roundTrip": bytes.Equal(decrypted.Plaintext, plaintext)}
	}
	r.succeeded("Decrypt", err, detail, func() string {
		if !bytes.Equal(decrypted.Plaintext, plaintext) {
			return "plaintext differs from what was encrypted"
		}
		if aws.ToString(decrypted.KeyId) != keyArn {
			return "response KeyId is not the key's ARN"
		}
		return ""
	})

	_, err = client.Decrypt(ctx, &kms.DecryptInput{
		CiphertextBlob: blob, EncryptionContext: map[string]string{"purpose": "something else"},
	})
	r.failedWith("DecryptWrongContext", "InvalidCiphertextException", err, isType[*types.InvalidCiphertextException])

	dataKey, err := client.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{
		KeyId: aws.String(keyID), KeySpec: types.DataKeySpecAes256, EncryptionContext: encCtx,
	})
	detail = nil
	var unwrapped *kms.DecryptOutput
	var unwrapErr error
	if err == nil {
		// The wrapped copy must decrypt to the plaintext copy, or the data key is useless.
		unwrapped, unwrapErr = client.Decrypt(ctx, &kms.DecryptInput{
			KeyId: aws.String(keyArn), CiphertextBlob: dataKey.CiphertextBlob, EncryptionContext: encCtx,
		})
		detail = map[string]any{"keyId": aws.ToString(dataKey.KeyId), "plaintextBytes": len(dataKey.Plaintext),
			"unwraps": unwrapErr == nil && bytes.Equal(unwrapped.Plaintext, dataKey.Plaintext)}
	}
	r.succeeded("GenerateDataKey", err, detail, func() string {
		switch {
		case len(dataKey.Plaintext) != 32:
			return "AES_256 data key is not 32 bytes"
		case aws.ToString(dataKey.KeyId) != keyArn:
			return "response KeyId is not the key's ARN"
		case unwrapErr != nil:
			return "decrypting the wrapped data key failed: " + unwrapErr.Error()
		case !bytes.Equal(unwrapped.Plaintext, dataKey.Plaintext):
			return "wrapped data key decrypts to other bytes"
		}
		return ""
	})

	// Small pages, so the SDK's own paginator has to follow NextMarker.
	pages := kms.NewListKeysPaginator(client, &kms.ListKeysInput{Limit: aws.Int32(2)})
	found, listed, pageCount := false, 0, 0
	err = nil
	for pages.HasMorePages() && pageCount < 1000 {
		page, pageErr := pages.NextPage(ctx)
		if pageErr != nil {
			err = pageErr
			break
		}
		pageCount++
		for _, k := range page.Keys {
			listed++
			if aws.ToString(k.KeyId) == keyID && aws.ToString(k.KeyArn) == keyArn {
				found = true
			}
		}
	}
	r.succeeded("ListKeys", err, map[string]any{"found": found, "keys": listed, "pages": pageCount}, func() string {
		if !found {
			return "the new key is not listed"
		}
		return ""
	})

	tampered := bytes.Clone(blob)
	tampered[len(tampered)/2] ^= 0x01
	_, err = client.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: tampered, EncryptionContext: encCtx})
	r.failedWith("DecryptTampered", "InvalidCiphertextException", err, isType[*types.InvalidCiphertextException])

	// A well-formed key id that no key has.
	_, err = client.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String("00000000-0000-4000-8000-000000000000")})
	r.failedWith("DescribeKeyUnknown", "NotFoundException", err, isType[*types.NotFoundException])
}

// wrongRegion shows the key works when signed for the server's region and is refused, before
// any operation runs, when the same key signs for another region.
func wrongRegion(ctx context.Context, r *runner, right, wrong *kms.Client) {
	_, err := right.ListKeys(ctx, &kms.ListKeysInput{Limit: aws.Int32(1)})
	r.succeeded("ListKeysRightRegion", err, nil, nil)
	_, err = wrong.ListKeys(ctx, &kms.ListKeysInput{Limit: aws.Int32(1)})
	r.failedWith("ListKeysWrongRegion", "InvalidSignatureException", err, nil)
}

func envOr(name, fallback string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return fallback
}

func main() {
	endpoint := flag.String("endpoint", envOr("COFFER_ENDPOINT", ""), "server URL, e.g. http://127.0.0.1:8080")
	region := flag.String("region", envOr("COFFER_REGION", "us-east-1"), "the server's region")
	keyID := flag.String("access-key-id", envOr("COFFER_ACCESS_KEY_ID", ""), "access key id")
	secret := flag.String("secret-access-key", envOr("COFFER_SECRET_ACCESS_KEY", ""), "secret access key")
	mode := flag.String("mode", "scenario", "scenario, wrong-region, secrets or ssm")
	otherRegion := flag.String("wrong-region", "eu-west-1", "region to sign with in wrong-region mode")
	timeout := flag.Duration("timeout", 2*time.Minute, "limit for the whole run")
	flag.Parse()
	if *endpoint == "" || *keyID == "" || *secret == "" {
		fmt.Fprintln(os.Stderr, "goclient: endpoint, access key id and secret access key are required")
		os.Exit(2)
	}

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	r := &runner{out: json.NewEncoder(os.Stdout)}
	client, err := newClient(ctx, *endpoint, *region, *keyID, *secret)
	if err != nil {
		fmt.Fprintln(os.Stderr, "goclient: configuring the SDK:", err)
		os.Exit(2)
	}
	switch *mode {
	case "scenario":
		scenario(ctx, r, client)
	case "wrong-region":
		if *otherRegion == *region {
			fmt.Fprintln(os.Stderr, "goclient: -wrong-region must differ from -region")
			os.Exit(2)
		}
		wrong, err := newClient(ctx, *endpoint, *otherRegion, *keyID, *secret)
		if err != nil {
			fmt.Fprintln(os.Stderr, "goclient: configuring the SDK:", err)
			os.Exit(2)
		}
		wrongRegion(ctx, r, client, wrong)
	case "secrets":
		sm, err := newSecretsClient(ctx, *endpoint, *region, *keyID, *secret)
		if err != nil {
			fmt.Fprintln(os.Stderr, "goclient: configuring the SDK:", err)
			os.Exit(2)
		}
		secrets(ctx, r, sm, *region)
	case "ssm":
		client, err := newSSMClient(ctx, *endpoint, *region, *keyID, *secret)
		if err != nil {
			fmt.Fprintln(os.Stderr, "goclient: configuring the SDK:", err)
			os.Exit(2)
		}
		parameters(ctx, r, client)
	default:
		fmt.Fprintf(os.Stderr, "goclient: unknown mode %q\n", *mode)
		os.Exit(2)
	}
	r.emit(step{Step: "done", OK: r.failures == 0, Detail: map[string]any{"mode": *mode, "failures": r.failures}})
	if r.failures > 0 {
		os.Exit(1)
	}
}
